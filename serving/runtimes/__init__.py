"""Framework runtimes behind one small protocol (see ``base.Runtime``)."""
