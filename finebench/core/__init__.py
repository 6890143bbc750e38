"""The neutral layer every other package may use and that uses none of them: the name registry, atomic file
writes, content hashes, safe torch loading and the labels of run specs."""
