"""The machinery behind :mod:`qmlnb.data` (import from there).

``catalog`` knows each dataset's files, class names and download sources,
``readers`` parses the official formats, ``splits`` selects classes and cuts
seeded stratified splits, ``download`` fetches and verifies files.

(The package is not called ``qmlnb/data/`` because the repository ignores
every ``data/`` folder, which is where datasets live.)
"""
