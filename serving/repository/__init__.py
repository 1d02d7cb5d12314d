"""The model store: reads a repository, loads and unloads versions (store), demo models and export."""
