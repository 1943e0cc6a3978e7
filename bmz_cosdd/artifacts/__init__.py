"""The files a user moves between machines, each with one owner: the run folder and bioimage.io packages (read)."""
