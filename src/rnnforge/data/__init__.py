"""Data shipped with rnnforge or read from the user's files."""
