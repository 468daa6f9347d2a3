"""The backup engine: a consistent snapshot, dumped per table in key-range chunks."""
