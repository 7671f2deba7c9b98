"""What /metrics serves: the daemon's own metrics, the endpoint families and their cache.

Design note. Everything but the per-endpoint families follows client_python: the
self-metrics are ``Counter``/``Gauge``/``Histogram`` in a private registry per daemon
(``metrics``), and the endpoint services are a ``Collector`` building plain families at
scrape time (``services``), since there are a few per project.

The per-endpoint families (``endpoints``) are the one measured exception. At 10,000
endpoints they are 18 series each, 34 MB of text (1.3 MB gzipped); building them in a
collector at scrape time cost 350 ms per scrape on the event loop, stalling polls, where the
target is 50 ms. So they are written by hand, incrementally: each endpoint's lines come from a
template built once per config, and are re-rendered when the poller replaces its state (a few
microseconds per poll); the text is kept per family in blocks of 256 endpoints (``cache``),
a block whose text did not change is the very same piece scrape after scrape and keeps its
compressed form, and a background task compresses the blocks polls have left. A scrape only
assembles pieces (2.8 ms p50, 10.7 ms p99 during a cycle in ``make bench``). For the registry
API the text is parsed back (``EndpointCollector``), so the two always agree.

Compressed pieces are raw deflate streams ending in a sync flush, concatenated into one gzip
member whose CRC-32 is combined from the pieces' (libz's ``crc32_combine`` through ctypes;
where libz is not found, ``zlib.crc32`` over the text), so a scrape never compresses 34 MB
again. One member per piece would need no combined CRC, but curl and wget read only the
first member of a body and silently drop the rest (measured: 20,000 of 1,500,700 bytes).
"""

from monitor.exposition.cache import Exposition
from monitor.exposition.endpoints import EndpointExposition, Snapshot
from monitor.exposition.metrics import MonitorMetrics
from monitor.exposition.services import ServiceSnapshot

__all__ = ["EndpointExposition", "Exposition", "MonitorMetrics", "ServiceSnapshot", "Snapshot"]
