"""The recurrent classifiers and what makes them train fast on a CPU.

``model`` builds the four architectures from a ``models.<name>`` block;
``fused`` and ``native`` (+ ``native/``, the C++ op compiled on first use) are
the faster layers with Keras' weights and maths; ``kernels`` picks which one a
training runs; ``side_by_side``, ``heap``, ``inputs``, ``augment`` and ``protocol``
are the training step's parts (batch parts, allocator, tf.data, random changes to
the images, steps and schedule).
No file I/O beyond the op's build cache; no DVC, no Airflow.

May import: runtime, data, config.
"""
