"""Data files shipped inside the package, found with importlib.resources."""
