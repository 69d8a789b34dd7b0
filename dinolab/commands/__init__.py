"""Sub-commands of the ``dinolab`` command line, one module each (see :mod:`dinolab.cli`)."""
