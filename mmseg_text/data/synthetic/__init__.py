"""Procedural hand radiographs written in the real on-disk format (see REFERENCE.md).

The real X-rays are private, so the reader, masks, captions, training and evaluation are exercised on
pictures drawn here: 29 bones along five rays with adult bone lengths, eight carpals with their real
overlaps (Trapezium/Trapezoid, Triquetrum/Pisiform), the distal radius and ulna, soft tissue, exposure
and noise. The person's metadata drives the picture (height and sex -> hand size and bone width, weight
-> soft tissue, age -> bone density and cortex), so a metadata-conditioned model has something to learn.
``degrade`` (``--degrade L``, 0-1) makes the image say less about the bones while the masks and metadata stay
the same: a positive control in which the metadata carries what the image hides, graded by L and measured
as the bone edges' contrast-to-noise ratio (:func:`bone_cnr`).

Geometry is built in a *hand frame* in millimetres: x points toward the ulna (little-finger side),
u toward the fingertips, origin at the radiocarpal joint. Angles are degrees and positive when they
turn +u toward +x, i.e. toward the ulna, which is also the sign of the wrist angle (ulnar deviation).
A right hand seen PA has its ulna on the image's right, so x maps to image +x; a left hand is mirrored.

One job per module, each depending only on those above it:

    plan         people, metadata, splits, bent-wrist shares, file names (no drawing)
    bones        bone shapes and 2-D affine transforms
    anatomy      the hand's bones in mm from a person's metadata
    attenuation  bones and soft tissue as an attenuation map
    polygons     bone outlines -> annotation polygons
    render       one image: placement, exposure, markers, degradation (render_image)
    contrast     what an image says about its bones: bone-edge CNR (bone_cnr)
    writer       the on-disk layout, JSON, meta_data.xlsx, truth CSV (generate_dataset)
"""
from mmseg_text.data.synthetic.anatomy import anatomy_bone_names, ray_bone_names
from mmseg_text.data.synthetic.bones import Affine, BlobBone, Bone, LongBone
from mmseg_text.data.synthetic.contrast import bone_cnr
from mmseg_text.data.synthetic.plan import (BENT_RANGE_DEG, BENT_SHARE, STRAIGHT_LIMIT_DEG, SUFFIX_SHARE,
                                            TEST_ID_SHARE, DatasetPlan, ImageSpec, Person, plan_dataset)
from mmseg_text.data.synthetic.polygons import annotation_polygon
from mmseg_text.data.synthetic.render import FADES, RenderedImage, check_degrade, check_fade, render_image
from mmseg_text.data.synthetic.shapes import write_shapes_dataset
from mmseg_text.data.synthetic.writer import (CARD_FILE, META_FILE, META_HEADERS, TRUTH_FILE, WRONG_JSON_SIZE,
                                              annotation_document, check_catalogue, generate_dataset,
                                              image_paths, truth_frame, write_metadata_xlsx)

__all__ = [
    "Affine", "BENT_RANGE_DEG", "BENT_SHARE", "BlobBone", "Bone", "CARD_FILE", "DatasetPlan", "FADES", "ImageSpec",
    "LongBone", "META_FILE", "META_HEADERS", "Person", "RenderedImage", "STRAIGHT_LIMIT_DEG", "SUFFIX_SHARE",
    "TEST_ID_SHARE", "TRUTH_FILE", "WRONG_JSON_SIZE", "anatomy_bone_names", "annotation_document",
    "annotation_polygon", "bone_cnr", "check_catalogue", "check_degrade", "check_fade", "generate_dataset", "image_paths",
    "plan_dataset", "ray_bone_names", "render_image", "truth_frame", "write_metadata_xlsx", "write_shapes_dataset",
]
