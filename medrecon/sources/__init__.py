"""Label sources: ways to get a :class:`~medrecon.volume.LabelMap` from a study."""
