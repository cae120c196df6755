"""File formats the stages share: LeCun's IDX (``idx``) and the split's arrays (``arrays``);
the data's drift profile and its distances (``drift``), and its report page (``drift_report``).

Pure readers and writers with no knowledge of stages or models.

May import: nothing of the project (config at most).
"""
