"""The program's entry point, for ``python -m monitor`` and the console script alike.

Its first act, before the second or so that importing the rest takes, is to ignore SIGHUP:
SIGHUP means "reload" to the daemon, and its default action (ending the process, exit 129)
would otherwise kill a daemon that a supervisor or an operator asks to reload that early.
``monitor.cli.main`` gives the other commands back the disposition they were started with,
and ``run`` replaces it with its reload handler once it serves.
"""

import signal


def main() -> int:
    started_with = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from monitor.cli import main as cli_main  # after the line above, on purpose

    return cli_main(sighup_at_start=started_with)


if __name__ == "__main__":
    raise SystemExit(main())
