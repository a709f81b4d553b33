"""`python -m embedcache.cli`: the same app as the `embedcache` command."""

from embedcache.cli import main

main()
