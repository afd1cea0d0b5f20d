"""Window encoders: a batch of crops → L2-normalised patch features, one family per module.

``vit`` holds CLIP's vision transformer as steps (:class:`~.vit.VisionTrunk`); each method's
encoder composes them (``last_block``: the methods that change only CLIP's last block).
"""
