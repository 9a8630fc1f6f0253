"""Data formats (no machine learning here): RecordIO, verification .bin, LFW pairs, identity folders."""
