"""The scheduling pipeline: the watcher moves due runs into the dispatch queue; the executor
claims them and starts a runner task for each pack through a dispatch backend."""
