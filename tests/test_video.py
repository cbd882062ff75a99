"""Clips as video files: small videos encoded here with PyAV (no downloads) give the same clip tensors
as the same frames in a folder (exactly for lossless codecs, within the codec's error for H.264 in
.mp4), in annotation lists and in the DFEW and FERV39K layouts; a damaged, empty or non-video file is
one clear error naming it."""

import numpy as np
import pytest
import torch
from PIL import Image

from logo_attn.logoformer import train
from logo_attn.logoformer.data import ClipRecord, FrameClipDataset, read_annotation_list, read_dfew, read_ferv39k
from logo_attn.logoformer.video import count_frames, read_frames

av = pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

# H.264 as most clips are; FFmpeg's own MPEG-4 encoder where a PyAV build lacks libx264
LOSSY = "libx264" if "libx264" in av.codecs_available else "mpeg4"
LOSSLESS = [("ffv1", ".mkv", "bgr0"), ("png", ".avi", "rgb24")]


def random_frames(count, height=20, width=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def smooth_frames(count, height=32, width=48):
    """Gradients a lossy codec keeps well; the blue level steps by 10 per frame, so that a frame taken
    from the wrong index differs by far more than the codec's error."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([x * 4, y * 5, np.full_like(x, 20 + 10 * t)], axis=-1) for t in range(count)]).astype(np.uint8)


def encode(path, frames, codec="ffv1", pix_fmt="bgr0", options=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def encode_lossy(path, frames):
    return encode(path, frames, LOSSY, "yuv420p", {"crf": "18"} if LOSSY == "libx264" else {"qscale": "2"})


def write_folder(folder, frames):
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i + 1:05d}.png")
    return folder


def clips(record_a, record_b, train, seed=3, **kwargs):
    """The clip of each record through FrameClipDataset, the random draws seeded alike."""
    out = []
    for record in (record_a, record_b):
        torch.manual_seed(seed)
        out.append(FrameClipDataset([record], train=train, **kwargs)[0][0])
    return out


@pytest.mark.parametrize("codec, suffix, pix_fmt", LOSSLESS, ids=[f"{c}{s}" for c, s, _ in LOSSLESS])
@pytest.mark.parametrize("count", [20, 3], ids=["long", "shorter-than-the-clip"])  # 3 frames loop, as for folders
def test_lossless_video_gives_the_clip_of_its_frame_folder(tmp_path, codec, suffix, pix_fmt, count):
    frames = random_frames(count)
    path = encode(tmp_path / f"clip{suffix}", frames, codec, pix_fmt)
    assert count_frames(path) == count
    assert torch.equal(read_frames(path, [count - 1, 0, 0]), torch.from_numpy(frames[[count - 1, 0, 0]]).permute(0, 3, 1, 2))
    as_video = ClipRecord(path, 1, "list.txt:1")
    as_folder = ClipRecord(write_folder(tmp_path / "clip", frames), 1, "list.txt:2")
    for train in (False, True):
        video_clip, folder_clip = clips(as_video, as_folder, train, segments=4, duration=2, image_size=16)
        assert video_clip.shape == (8, 3, 16, 16)
        assert torch.equal(video_clip, folder_clip), f"train={train}"


def test_lossy_mp4_gives_the_clip_of_its_frames_within_the_codec_error(tmp_path):
    frames = smooth_frames(20)
    path = encode_lossy(tmp_path / "clip.mp4", frames)
    decoded = read_frames(path, range(20)).permute(0, 2, 3, 1).int()
    error = (decoded[:, None] - torch.from_numpy(frames)[None].int()).abs().float().mean(dim=(2, 3, 4))  # (decoded, original)
    assert torch.equal(error.argmin(dim=1), torch.arange(20))  # every frame is the one of its index
    assert error.diagonal().max() < 3.0  # grey levels; the nearest other frame is >= 10/3 away on average
    as_folder = ClipRecord(write_folder(tmp_path / "frames", frames), 0, "x")
    video_clip, folder_clip = clips(ClipRecord(path, 0, "x"), as_folder, False, segments=4, duration=2, image_size=32)
    # the same frames, normalised: the codec's error divided by ImageNet's std (>= 0.224)
    assert (video_clip - folder_clip).abs().mean() < 3.0 / 255 / 0.224


def test_video_clips_in_lists_and_in_the_dfew_and_ferv39k_layouts(tmp_path):
    frames = random_frames(6)
    encode(tmp_path / "videos" / "a.mkv", frames)
    (tmp_path / "train.txt").write_text(f"videos/a.mkv 6 2\n{tmp_path / 'videos' / 'a.mkv'} 6 1\n")
    assert [(r.path, r.label) for r in read_annotation_list(tmp_path / "train.txt")] == [
        (tmp_path / "videos" / "a.mkv", 1), (tmp_path / "videos" / "a.mkv", 0)]

    # DFEW's Clip/original/<5-digit name>.mp4 (an unpadded name works too)
    split = tmp_path / "dfew" / "EmoLabel_DataSplit" / "train(single-labeled)"
    split.mkdir(parents=True)
    (split / "set_1.csv").write_text("video_name,label\n1,1\n25,3\n")
    encode_lossy(tmp_path / "dfew" / "Clip" / "original" / "00001.mp4", smooth_frames(4))
    encode_lossy(tmp_path / "dfew" / "Clip" / "original" / "25.mp4", smooth_frames(4))
    records = read_dfew(tmp_path / "dfew", 1, "train", "Clip/original")
    assert [(r.path.name, r.label) for r in records] == [("00001.mp4", 0), ("25.mp4", 2)]
    assert FrameClipDataset(records, train=False, image_size=16)[1][0].shape == (16, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="Clip/original for DFEW's .mp4 clips"):
        read_dfew(tmp_path / "dfew", 1, "train")  # no frame folders: the message says where the videos would be

    # FERV39K's 0_7_LabelClips/<scene>/<emotion>/<clip>.mp4
    setup = tmp_path / "ferv" / "4_setups" / "All_scenes"
    setup.mkdir(parents=True)
    (setup / "test_All.csv").write_text("Action/Happy/0001 Happy\n")
    encode_lossy(tmp_path / "ferv" / "0_7_LabelClips" / "Action" / "Happy" / "0001.mp4", smooth_frames(4))
    records = read_ferv39k(tmp_path / "ferv", "test", "0_7_LabelClips")
    assert records[0].path == tmp_path / "ferv" / "0_7_LabelClips" / "Action" / "Happy" / "0001.mp4"
    with pytest.raises(FileNotFoundError, match=r"2_ClipsforFaceCrop/Action/Happy/0001 does not exist .*test_All\.csv:1"):
        read_ferv39k(tmp_path / "ferv", "test")


def _empty_container(path):
    # Matroska keeps a video track without frames (an .mp4 would drop it: "has no video stream")
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 24, 20, "bgr0"
        container.start_encoding()  # the header, then no frame


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
     "cannot read video"),
    (lambda p: p.write_bytes(b""), "cannot read video"),
    (lambda p: p.write_bytes(encode_lossy(p, smooth_frames(20)).read_bytes()[:1500]), "has no frames"),
    (_empty_container, "has no frames"),
    (_audio_only, "has no video stream"),
], ids=["random-bytes", "empty-file", "truncated-mp4", "no-frames", "audio-only"])
def test_bad_video_files_name_the_file_and_the_list_line(tmp_path, make, message):
    path = tmp_path / "clip.mp4"
    make(path)
    dataset = FrameClipDataset([ClipRecord(path, 0, "list.txt:7")], train=False, image_size=16)
    with pytest.raises(ValueError) as error:
        dataset[0]
    assert f"{path} (listed in list.txt:7)" in str(error.value) and message in str(error.value)


def test_a_video_that_ends_before_the_frame_asked_for(tmp_path):
    path = encode(tmp_path / "clip.mkv", random_frames(5))
    with pytest.raises(ValueError, match=r"clip\.mkv stops decoding after 5 frames, before frame 9"):
        read_frames(path, [0, 8])


def test_a_list_entry_that_is_neither_folder_nor_video(tmp_path):
    (tmp_path / "notes.txt").write_text("not a clip")
    (tmp_path / "list.txt").write_text("notes.txt 3 1\n")
    with pytest.raises(ValueError, match=r"notes\.txt \(listed in .*list\.txt:1\) is neither a frame folder nor a video"):
        read_annotation_list(tmp_path / "list.txt")


def test_a_broken_video_in_a_loader_worker_is_one_error_line(tmp_path, capsys):
    # the error comes back from a DataLoader worker process, re-raised with the worker's traceback
    encode(tmp_path / "good.mkv", random_frames(4))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "list.txt").write_text("good.mkv 4 1\nbad.mp4 4 2\n")
    lists = ["--train-list", str(tmp_path / "list.txt"), "--val-list", str(tmp_path / "list.txt"),
             "--test-list", str(tmp_path / "list.txt")]
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "list", *lists, "--num-classes", "2", "--segments", "2", "--duration", "1",
                    "--image-size", "16", "--embed-dim", "16", "--depth", "1", "--num-heads", "2", "--batch", "2",
                    "--epochs", "1", "--workers", "1", "--no-progress", "--out-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: cannot read video {tmp_path / 'bad.mp4'} (listed in {tmp_path / 'list.txt'}:2): " \
                   "Invalid data found when processing input", last
