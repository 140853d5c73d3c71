"""Subgroups come from the catalogue: its groups, and the image subgroups its declared derived facts give."""
from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.synthetic.shapes import shapes_catalogue_text


def test_hand_bones_declare_wrist_subgroups_and_another_anatomy_none(tmp_path):
    hand = load_catalogue("hand_bones")
    assert hand.group_names == ("finger", "carpal", "forearm")
    assert [(s.fact, s.labels) for s in hand.fact_subgroups] == [("bent_wrist", (("bent", True), ("straight", False)))]
    path = tmp_path / "shapes.yaml"
    path.write_text(shapes_catalogue_text(5))
    shapes = load_catalogue(path)
    assert shapes.group_names == ("round", "angular") and shapes.fact_subgroups == ()
