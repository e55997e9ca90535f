"""tap-scale: Singer tap for Scale AI's v2 data API."""
