"""In-process simulation: the virtual clock of split training rounds."""
