"""Hip localisation: where each femoral head is on any hip radiograph, and its neck axis.

A small fully convolutional network (:mod:`.network`) turns the radiograph, resampled to
:data:`~.detector.DETECTOR_MM_PER_PX`, into one heatmap per landmark and side (head centre and neck point of the
right and of the left hip); :mod:`.detector` reads the peaks back in source pixels with a confidence. It is trained
(:mod:`.training`) on radiographs simulated from the measurable shared CTs (:mod:`.landmark_views`), whose
projected landmarks are exact; whole-CT folds measure it on CTs it never saw.
"""
