"""Data files shipped with neuro_meta (read through :mod:`neuro_meta.datasets`).

* ``omniglot.bin`` -- the Omniglot background set (small 1 + small 2, 4,840 images of
  242 characters from 8 alphabets) and the 20 official one-shot runs, 28x28 bit-packed,
  built by ``python -m neuro_meta.data.build_omniglot SOURCE_DIR``;
* ``OMNIGLOT_LICENSE.txt`` and ``OMNIGLOT_CITATION.txt`` -- the data's MIT licence and
  how to cite it.
"""
