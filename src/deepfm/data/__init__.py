"""Reading files, encoding features and batching: everything between a file and a model."""
