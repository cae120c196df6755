"""File formats the stages share: LeCun's IDX (``idx``) and the split's arrays (``arrays``).

Pure readers and writers with no knowledge of stages or models.

May import: nothing of the project (config at most).
"""
