"""Datasets on tiny generated folder trees (DFEW, FERV39K, annotation list), sampling, augmentation, synthetic clips."""

import pytest
import torch
from PIL import Image

from logo_attn.logoformer import augment
from logo_attn.logoformer.data import (
    EMOTIONS, ClipRecord, FrameClipDataset, list_frames, load_frames, read_annotation_list, read_dfew, read_ferv39k,
    sample_indices, split_train_val,
)
from logo_attn.logoformer.synthetic import COLOURS, QUADRANTS, TurningWheel


def write_clip(folder, frames, size=(24, 20), suffix=".png", name="{:05d}", seed=0):
    """Write `frames` random RGB frames; returns the uint8 arrays as a (T, 3, H, W) tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (frames, size[1], size[0], 3), generator=g, dtype=torch.uint8)
    for i in range(frames):
        Image.fromarray(data[i].numpy()).save(folder / (name.format(i + 1) + suffix))
    return data.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# sampling


def test_eval_sampling_takes_segment_centres_by_hand():
    # 40 frames, 8 x 2: span 39, tick 4.875, starts int(2.4375 + 4.875 k)
    assert sample_indices(40, 8, 2, train=False) == [2, 3, 7, 8, 12, 13, 17, 18, 21, 22, 26, 27, 31, 32, 36, 37]


def test_train_sampling_stays_in_its_segment_and_varies():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        idx = sample_indices(40, 8, 2, train=True, generator=g)
        starts = idx[::2]
        assert idx[1::2] == [s + 1 for s in starts]
        assert all(4 * k <= s < 4 * k + 4 for k, s in enumerate(starts))  # part = 39 // 8 = 4
        seen.add(tuple(starts))
    assert len(seen) > 50


def test_short_clips_loop():
    assert sample_indices(5, 8, 2, train=False) == [i % 5 for i in range(16)]
    g = torch.Generator().manual_seed(1)
    idx = sample_indices(5, 8, 2, train=True, generator=g)
    assert idx == [(idx[0] + i) % 5 for i in range(16)]
    assert sample_indices(1, 8, 2) == [0] * 16


def test_just_long_enough_clip():
    assert sample_indices(9, 8, 2, train=False) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8]


# --------------------------------------------------------------------------------------------------
# frames


def test_frames_in_natural_order_and_exact_png(tmp_path):
    data = write_clip(tmp_path / "clip", 12, name="frame_{}")
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    names = [p.name for p in list_frames(tmp_path / "clip")]
    assert names == [f"frame_{i}.png" for i in range(1, 13)]  # frame_10 after frame_9
    assert torch.equal(load_frames(list_frames(tmp_path / "clip")), data)


def test_jpg_frames_and_mixed_sizes(tmp_path):
    write_clip(tmp_path / "clip", 2, suffix=".jpg")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "clip" / "00003.jpg")
    clip = load_frames(list_frames(tmp_path / "clip"))
    assert clip.shape == (3, 3, 20, 24) and clip.dtype == torch.uint8
    assert abs(int(clip[2, 0].float().mean()) - 200) < 4  # resized to the first frame's size


# --------------------------------------------------------------------------------------------------
# layouts


def make_dfew(root, rows, split="train", fold=1, header="video_name,label"):
    folder = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"set_{fold}.csv").write_text("\n".join([header] + [f"{v},{l}" for v, l in rows]) + "\n")
    for video, _ in rows:
        write_clip(root / "Clip" / "clip_224x224" / f"{video:05d}", 3, seed=video)


def test_dfew_layout(tmp_path):
    make_dfew(tmp_path, [(1, 1), (2, 7), (15, 4)])
    make_dfew(tmp_path, [(3, 2)], split="test")
    train = read_dfew(tmp_path, 1, "train")
    assert [(r.path.name, r.label) for r in train] == [("00001", 0), ("00002", 6), ("00015", 3)]
    assert train[1].source.endswith("set_1.csv:3")
    assert [(r.path.name, r.label) for r in read_dfew(tmp_path, 1, "test")] == [("00003", 1)]
    clip, label = FrameClipDataset(train, train=False)[2]
    assert clip.shape == (16, 3, 112, 112) and clip.dtype == torch.float32 and label == 3


def test_dfew_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"set_2\.csv"):
        read_dfew(tmp_path, 2, "train")
    make_dfew(tmp_path, [(1, 1), (2, 8)])
    with pytest.raises(ValueError, match=r"set_1\.csv:3: label 8 is outside 1\.\.7"):
        read_dfew(tmp_path, 1, "train")
    make_dfew(tmp_path, [(1, 1)], header="clip,emotion")
    with pytest.raises(ValueError, match="video_name,label"):
        read_dfew(tmp_path, 1, "train")
    make_dfew(tmp_path, [(1, 1)])
    (tmp_path / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_1.csv").write_text("video_name,label\n1,1\n99,2\n")
    with pytest.raises(FileNotFoundError, match=r"00099 does not exist \(listed in .*set_1\.csv:3\)"):
        read_dfew(tmp_path, 1, "train")
    with pytest.raises(ValueError, match="fold must be 1..5"):
        read_dfew(tmp_path, 6, "train")


def test_ferv39k_layout(tmp_path):
    setup = tmp_path / "4_setups" / "All_scenes"
    setup.mkdir(parents=True)
    (setup / "train_All.csv").write_text("Action/Happy/0001 Happy\nDaily/Fear/0002 Fear\n")
    (setup / "test_All.csv").write_text("video label\nTalk/Angry/0003 Angry\n")  # a header line is skipped
    for clip in ("Action/Happy/0001", "Daily/Fear/0002", "Talk/Angry/0003"):
        write_clip(tmp_path / "2_ClipsforFaceCrop" / clip, 20, suffix=".jpg")
    train = read_ferv39k(tmp_path, "train")
    assert [r.label for r in train] == [EMOTIONS.index("happy"), EMOTIONS.index("fear")]
    assert train[1].path == tmp_path / "2_ClipsforFaceCrop" / "Daily" / "Fear" / "0002"
    test = read_ferv39k(tmp_path, "test")
    assert [r.label for r in test] == [EMOTIONS.index("angry")] and test[0].source.endswith("test_All.csv:2")
    clip, _ = FrameClipDataset(train, train=True, image_size=56)[0]
    assert clip.shape == (16, 3, 56, 56)
    (setup / "train_All.csv").write_text("Action/Happy/0001 Happy\nDaily/Fear/0002 Contempt\n")
    with pytest.raises(ValueError, match=r"train_All\.csv:2.*Contempt"):
        read_ferv39k(tmp_path, "train")


def test_annotation_list_layout_and_errors(tmp_path):
    write_clip(tmp_path / "clips" / "a", 4)
    write_clip(tmp_path / "clips" / "b", 30)
    listing = tmp_path / "train.txt"
    listing.write_text(f"clips/a 4 1\n{tmp_path / 'clips' / 'b'} 30 7\n\n")
    records = read_annotation_list(listing)
    assert [(r.path, r.label) for r in records] == [(tmp_path / "clips" / "a", 0), (tmp_path / "clips" / "b", 6)]
    assert [r.label for r in read_annotation_list(listing, label_base=0, num_classes=8)] == [1, 7]
    listing.write_text("clips/a 4 0\n")
    with pytest.raises(ValueError, match=r"train\.txt:1: label 0 is outside 1\.\.7 .*label_base=1"):
        read_annotation_list(listing)
    listing.write_text("clips/a 4\n")
    with pytest.raises(ValueError, match=r"train\.txt:1: expected 'path num_frames label'"):
        read_annotation_list(listing)
    listing.write_text("clips/zzz 4 1\n")
    with pytest.raises(FileNotFoundError, match=r"zzz does not exist \(listed in .*train\.txt:1\)"):
        read_annotation_list(listing)


def test_empty_clip_and_broken_frame_name_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    dataset = FrameClipDataset([ClipRecord(tmp_path / "empty", 0, "list.txt:4")], train=False)
    with pytest.raises(ValueError, match=r"empty has no frames .*list\.txt:4"):
        dataset[0]
    write_clip(tmp_path / "broken", 2)
    (tmp_path / "broken" / "00003.png").write_bytes(b"not a png")
    dataset = FrameClipDataset([ClipRecord(tmp_path / "broken", 0, "list.txt:5")], train=False, segments=3, duration=1)
    with pytest.raises(ValueError, match=r"cannot read frame .*00003\.png"):
        dataset[0]


def test_eval_clip_values_are_normalised_frames(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i, value in enumerate([10, 200]):
        Image.new("RGB", (112, 112), (value, value, value)).save(folder / f"{i}.png")
    clip, _ = FrameClipDataset([ClipRecord(folder, 0, "x")], train=False, segments=2, duration=1)[0]
    for t, value in enumerate([10, 200]):
        expected = (value / 255 - torch.tensor(augment.IMAGENET_MEAN)) / torch.tensor(augment.IMAGENET_STD)
        torch.testing.assert_close(clip[t].mean(dim=(1, 2)), expected)


def test_split_train_val_is_stratified_disjoint_and_seeded():
    records = [ClipRecord(f"c{i}", i % 3, f"x:{i}") for i in range(60)] + [ClipRecord("lonely", 3, "x:60")]
    train, val = split_train_val(records, 0.2, seed=5)
    assert len(train) + len(val) == 61 and not {r.path for r in train} & {r.path for r in val}
    assert sorted(r.label for r in val) == [0] * 4 + [1] * 4 + [2] * 4  # 20% per class; a single clip stays in train
    assert split_train_val(records, 0.2, seed=5) == (train, val)
    assert split_train_val(records, 0.2, seed=6)[1] != val


# --------------------------------------------------------------------------------------------------
# augmentation


def test_random_resized_crop_box_respects_bounds_and_scale():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = augment.random_resized_crop_box(90, 120, (0.3, 0.6), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 90 and 0 <= left and left + w <= 120
        assert 0.3 * 0.9 <= h * w / (90 * 120) <= 0.6 * 1.1  # rounding of h and w
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_random_resized_crop_falls_back_to_a_centre_crop():
    # an impossible scale range forces the fallback: the largest centre crop with ratio <= 4/3
    assert augment.random_resized_crop_box(10, 100, (5.0, 6.0)) == (0, (100 - 13) // 2, 10, 13)


def test_train_transform_same_crop_and_flip_for_all_frames():
    frame = torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8)
    clip = frame.expand(5, -1, -1, -1)
    flips = set()
    for seed in range(12):
        out = augment.train_transform(clip, 32, generator=torch.Generator().manual_seed(seed))
        assert out.shape == (5, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
        assert all(torch.equal(out[0], out[t]) for t in range(5))
        box = augment.random_resized_crop_box(64, 80, generator=torch.Generator().manual_seed(seed))
        unflipped = augment._resize(frame[..., box[0]:box[0] + box[2], box[1]:box[1] + box[3]].float() / 255, (32, 32))[0]
        flips.add(torch.allclose(out[0], unflipped.flip(-1)) and not torch.allclose(out[0], unflipped))
    assert flips == {True, False}  # both outcomes occur


def test_eval_transform_matches_pil_resize_and_centre_crop():
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (48, 64, 3), generator=g, dtype=torch.uint8)
    out = augment.eval_transform(frame.permute(2, 0, 1)[None], 24)
    pil = Image.fromarray(frame.numpy()).resize((32, 24), Image.BILINEAR)  # shorter side 48 -> 24
    expected = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8).view(24, 32, 3).permute(2, 0, 1)
    expected = expected[:, :, 4:28].float() / 255
    assert out.shape == (1, 3, 24, 24)
    assert (out[0] - expected).abs().max() < 2.5 / 255  # PIL rounds to uint8; both antialias the same way


# --------------------------------------------------------------------------------------------------
# synthetic clips


def _orientation(frame: torch.Tensor) -> int:
    """Which quarter turn the wheel shows: the colour found at the centre of the top-left quadrant."""
    quarter = frame.shape[-1] // 4
    centre = frame[:, quarter - 2:quarter + 2, quarter - 2:quarter + 2].mean(dim=(1, 2))  # RGB
    colour = int((COLOURS - centre).norm(dim=1).argmin())
    return (0 - colour) % 4  # quadrant 0 shows colour (0 - orientation) % 4


def test_synthetic_clips_show_the_class_only_in_their_order():
    data = TurningWheel(64, num_frames=8, seed=3)
    assert sorted(set(data.labels)) == [0, 1, 2, 3]
    expected_steps = {0: [1] * 7, 1: [3] * 7, 2: [1, 1, 1, 3, 3, 3, 3], 3: [3, 3, 3, 1, 1, 1, 1]}
    for i in range(64):
        clip, label = data[i]
        assert clip.shape == (8, 3, 32, 32) and label == data.labels[i]
        orientations = [_orientation(frame) for frame in clip]
        assert sorted(orientations) == [0, 0, 1, 1, 2, 2, 3, 3]  # every orientation twice, whatever the class
        assert [(b - a) % 4 for a, b in zip(orientations, orientations[1:])] == expected_steps[label]
    assert torch.equal(data[5][0], data[5][0])
    assert not torch.equal(TurningWheel(8, seed=4)[5][0], data[5][0])


def test_synthetic_turn_moves_each_colour_clockwise():
    data = TurningWheel(1, seed=0)
    clip, _ = data[0]
    half = 16
    frame = clip[0]
    quadrant_colours = [int((COLOURS - frame[:, r * half + 6:r * half + 10, c * half + 6:c * half + 10].mean(dim=(1, 2)))
                            .norm(dim=1).argmin()) for r, c in QUADRANTS]
    orientation = _orientation(frame)
    assert quadrant_colours == [(q - orientation) % 4 for q in range(4)]


def test_synthetic_single_frames_are_uninformative():
    # The orientation of any one frame is uniform for every class (up to sampling noise).
    data = TurningWheel(800, seed=9)
    counts = torch.zeros(4, 4)
    for i in range(800):
        clip, label = data[i]
        counts[label, _orientation(clip[3])] += 1
    expected = counts.sum(dim=1, keepdim=True) / 4
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 30  # 12 degrees of freedom: p ~ 0.003 if the class showed in the frame


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 8"):
        TurningWheel(4, num_frames=12)
    with pytest.raises(ValueError, match="jitter"):
        TurningWheel(4, size=16, jitter=4)
    with pytest.raises(IndexError):
        TurningWheel(4)[4]
