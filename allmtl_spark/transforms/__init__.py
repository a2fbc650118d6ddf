"""Pure image functions (numpy / OpenCV / scipy): ROI, lymphoblast isolation, mask post-processing.

No Spark, pandas or TensorFlow here; Spark adapters wrap these functions elsewhere. Images are
HxWx3 uint8 RGB, masks HxW uint8 0/255, label images HxW int32.
"""
