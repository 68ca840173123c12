"""The live loop: the simulated world uses a running feedrec server over HTTP (``traffic``) and is
measured against what it knows is true (``oracle``, ``metrics``)."""
