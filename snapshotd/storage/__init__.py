"""Storage: page packs, snapshot files, the store, rounds and maintenance (docs/FORMAT.md)."""
