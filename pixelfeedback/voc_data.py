"""PASCAL VOC 2012 (and optionally SBD): fetching, extracting, converting SBD's labels, and
writing DeepLab list files (tools/fetch_voc.py is the command).

Downloads are resumable, verified against the published md5 sums, and renamed into place
only when complete. The folders and list files it makes are listed in the command's help.
"""
import collections
import contextlib
import gzip
import io
import json
import lzma
import os
import posixpath
import shutil
import sys
import tarfile
import zlib

import numpy as np

from pixelfeedback import download as dl
from pixelfeedback import files
from python_layers import ToolkitError, voc_io

BASE_URL_ENV = "TOOLKIT_DATA_BASE_URL"

Archive = collections.namedtuple("Archive", ["filename", "url", "md5", "description"])

# md5 sums as published with the data sets' loaders (torchvision's VOCSegmentation and
# SBDataset use the same values).
ARCHIVES = {
    "voc": Archive("VOCtrainval_11-May-2012.tar",
                   "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                   "6cd6e144f989b92b3379bac3b3de84fd", "PASCAL VOC 2012 trainval (about 2 GB)"),
    "sbd": Archive("benchmark.tgz",
                   "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
                   "semantic_contours/benchmark.tgz",
                   "82b4d87ceb2ed10f6038a1cba92111cb",
                   "Semantic Boundaries Dataset, Hariharan et al. 2011 (about 1.4 GB)"),
}


def count_warnings(counts, lists_dir):
    """One line per list whose image count is not the published data set's (a cut archive,
    a subset, another data set), and one when train_aug.txt was not made."""
    lines = []
    for name, count in counts.items():
        expected = voc_io.SPLIT_IMAGES.get(name)
        if expected is not None and count != expected:
            lines.append(f"warning: {os.path.join(lists_dir, name + '.txt')} has {count:,} "
                         f"images, the published VOC 2012{' + SBD' if name == 'train_aug' else ''}"
                         f" {expected:,}: results on these lists will not compare with the "
                         "thesis's (an incomplete or different data set?)")
    if "train_aug" not in counts:
        lines.append(f"note: no {os.path.join(lists_dir, 'train_aug.txt')} (no SBD labels): "
                     "the sweep's stage 1 trains on it; fetch SBD with --sbd")
    return lines


def archive_url(archive, base_url=None):
    return base_url.rstrip("/") + "/" + archive.filename if base_url else archive.url


def obtain(archive, downloads, base_url=None, local=None, verify=True, progress=True):
    """The path of a complete, verified archive: ``local`` if given, else downloaded."""
    md5 = archive.md5 if verify else None
    if local:
        if not os.path.isfile(local):
            raise ToolkitError(f"archive not found: {local}; check the path given to "
                               "--from-archive / --sbd-archive")
        if verify:
            print(f"checking md5 of {local}")
        dl.verify_file(local, md5=md5, what=local, progress=progress,
                       hint="It is not the published file; pass --no-verify to use it anyway")
        return local
    path = os.path.join(downloads, archive.filename)
    if os.path.exists(path):
        print(f"using {path} (downloaded before)")
        dl.verify_file(path, md5=md5, what=path, progress=progress,
                       hint=f"Delete {path} and run the command again to download it afresh")
        return path
    url = archive_url(archive, base_url)
    print(f"downloading {archive.description}: {url}")
    dl.download(url, path, md5=md5, progress=progress)
    return path


# what a bogus or cut-short (compressed) tar raises while it is read
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


@contextlib.contextmanager
def reading_archive(archive, what, advice):
    """Turn the errors of reading a bogus or truncated tar into one ToolkitError naming
    ``archive`` (``what`` it should be, ``advice``: how to get a whole one)."""
    try:
        yield
    except ARCHIVE_ERRORS as exc:
        detail = " ".join(str(exc).split()) or exc.__class__.__name__
        if detail.startswith("file could not be opened successfully"):
            detail = "it is no tar archive"
        raise ToolkitError(f"cannot read {archive}: it is not a whole {what} ({detail}); "
                           f"{advice}") from None


def archive_advice(archive, spec, local, flag):
    """How to replace the bad archive of ``spec``: the user's own (given by ``flag``), or
    the download at ``archive``."""
    if local:
        return f"give {flag} the complete {spec.filename} (or leave {flag} out to download it)"
    return f"delete {archive} and run the command again to download it afresh"


def safe_members(tf, archive):
    """Regular files and folders of a tar, refusing paths that would leave the target."""
    for member in tf:
        name = posixpath.normpath(member.name)
        if name.startswith(("/", "../")) or name == "..":
            raise ToolkitError(f"{archive} has a member outside its folder ({member.name}); "
                               "refusing to extract it: the archive is not the published one")
        if member.isfile() or member.isdir():
            yield member


def voc_root_of(dest):
    return os.path.join(dest, "VOCdevkit", "VOC2012")


def voc_stamp(voc_root):
    """Written after a complete extraction; its presence skips download and extraction."""
    return os.path.join(voc_root, ".extracted")


def sbd_stamp(voc_root):
    """Written after a complete SBD conversion: the SBD train and val ids, as JSON."""
    return os.path.join(voc_root, "SegmentationClassAug", ".sbd-splits.json")


def extract_voc(archive, dest, progress=True, advice="fetch it again"):
    """Extract VOCdevkit/ of the VOC tar into ``dest``; returns the VOC2012 folder. A bogus
    or truncated tar is a ToolkitError naming it and saying ``advice``."""
    from tqdm import tqdm

    voc_root = voc_root_of(dest)
    stamp = voc_stamp(voc_root)
    print(f"extracting {archive} into {dest}")
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with reading_archive(archive, "VOC 2012 trainval tar", advice), \
            tarfile.open(archive) as tf, tqdm(total=os.path.getsize(archive), unit="B",
                                              unit_scale=True, desc="extract VOC",
                                              disable=not progress) as bar:
        for member in safe_members(tf, archive):
            if member.name.startswith("VOCdevkit/"):
                tf.extract(member, dest, **kwargs)
            bar.update(member.size)
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        if not os.path.isdir(os.path.join(voc_root, sub)):
            raise ToolkitError(f"{archive} has no VOCdevkit/VOC2012/{sub}; it is not the VOC "
                               f"2012 trainval archive, or it is cut short: {advice}")
    files.write_text(stamp, os.path.basename(archive) + "\n")
    return voc_root


def read_sbd_stamp(voc_root):
    """(SBD train ids, SBD val ids) of a finished conversion, or None when there was none.
    The stamp is this tool's own file: one that cannot be read (cut short, edited) means
    the conversion is redone, with a note, never an error."""
    stamp = sbd_stamp(voc_root)
    if not os.path.exists(stamp):
        return None
    try:
        with open(stamp) as f:
            splits = json.load(f)
        train, val = splits["train"], splits["val"]
        if all(isinstance(ids, list) for ids in (train, val)):
            return train, val
    except (OSError, ValueError, TypeError, KeyError):
        pass
    print(f"note: {stamp} (what the last SBD conversion wrote) cannot be read; converting "
          "SBD again")
    return None


def read_ids(path):
    """Image ids of a VOC / SBD split file, one per line."""
    if not os.path.isfile(path):
        raise ToolkitError(f"split file not found: {path}; the archive is incomplete")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def sbd_label(mat_bytes, source):
    """The class map (H, W) uint8 of an SBD cls/*.mat (struct GTcls, field Segmentation)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(io.BytesIO(mat_bytes), squeeze_me=True, struct_as_record=False)
        label = np.asarray(mat["GTcls"].Segmentation)
    except Exception as exc:  # scipy raises many kinds on a broken file
        raise ToolkitError(f"cannot read the SBD label {source} ({exc}); the archive is "
                           "corrupt: delete it and fetch it again") from None
    if label.ndim != 2:
        raise ToolkitError(f"SBD label {source} has shape {label.shape}; expected a 2-D map")
    return label.astype(np.uint8)


def convert_sbd(archive, voc_root, progress=True, advice="fetch it again"):
    """Write SegmentationClassAug from the SBD tgz; returns (sbd train ids, sbd val ids).

    The tgz is streamed: each cls/*.mat becomes a palette PNG; SBD images missing from
    JPEGImages are copied. VOC's own labels are copied over SBD's afterwards. A bogus or
    truncated tgz is a ToolkitError naming it and saying ``advice``.
    """
    from tqdm import tqdm

    aug_dir = os.path.join(voc_root, "SegmentationClassAug")
    jpeg_dir = os.path.join(voc_root, "JPEGImages")
    splits = {}
    converted = 0
    with reading_archive(archive, "SBD benchmark.tgz", advice), \
            tarfile.open(archive, "r|*") as tf, \
            tqdm(unit=" files", desc="convert SBD", disable=not progress) as bar:
        for member in safe_members(tf, archive):
            if not member.isfile():
                continue
            parts = member.name.split("/")  # .../dataset/{train,val}.txt, .../dataset/cls/x.mat
            folder, base = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", parts[-1])
            parent = parts[-3] if len(parts) >= 3 else ""
            stem, ext = os.path.splitext(base)
            if folder == "dataset" and base in ("train.txt", "val.txt"):
                text = tf.extractfile(member).read().decode()
                splits[stem] = [line.split()[0] for line in text.splitlines() if line.strip()]
            elif parent == "dataset" and folder == "cls" and ext == ".mat":
                label = sbd_label(tf.extractfile(member).read(), f"{archive}:{member.name}")
                files.write_label(os.path.join(aug_dir, stem + ".png"), label)
                converted += 1
                bar.update()
            elif parent == "dataset" and folder == "img" and ext == ".jpg":
                target = os.path.join(jpeg_dir, base)
                if not os.path.exists(target):
                    with files.atomic_path(target) as tmp, open(tmp, "wb") as f:
                        shutil.copyfileobj(tf.extractfile(member), f)
    if converted == 0 or set(splits) != {"train", "val"}:
        raise ToolkitError(f"{archive} has no benchmark_RELEASE/dataset/cls/*.mat or "
                           "train.txt/val.txt; it is not the SBD benchmark.tgz")
    voc_labels = os.path.join(voc_root, "SegmentationClass")
    for name in sorted(os.listdir(voc_labels)):
        if name.endswith(".png"):
            shutil.copyfile(os.path.join(voc_labels, name), os.path.join(aug_dir, name))
    files.write_json(sbd_stamp(voc_root), splits)
    return splits["train"], splits["val"]


def write_lists(voc_root, lists_dir, sbd_splits=None):
    """Write train.txt, val.txt (and train_aug.txt with SBD); returns {name: count}."""
    seg_sets = os.path.join(voc_root, "ImageSets", "Segmentation")
    voc_train = read_ids(os.path.join(seg_sets, "train.txt"))
    voc_val = read_ids(os.path.join(seg_sets, "val.txt"))
    lists = {"train": (voc_train, "SegmentationClass"), "val": (voc_val, "SegmentationClass")}
    if sbd_splits is not None:
        sbd_train, sbd_val = sbd_splits
        train_aug = sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))
        lists["train_aug"] = (train_aug, "SegmentationClassAug")
    counts = {}
    for name, (ids, label_dir) in lists.items():
        missing = [i for i in ids
                   if not os.path.isfile(os.path.join(voc_root, "JPEGImages", i + ".jpg"))
                   or not os.path.isfile(os.path.join(voc_root, label_dir, i + ".png"))]
        if missing:
            raise ToolkitError(f"{len(missing)} images of the {name} split lack an image or a "
                               f"label in {voc_root} (e.g. {missing[0]}); the archive is "
                               "incomplete: fetch it again")
        lines = "".join(f"/JPEGImages/{i}.jpg /{label_dir}/{i}.png\n" for i in ids)
        files.write_text(os.path.join(lists_dir, name + ".txt"), lines)
        counts[name] = len(ids)
    return counts


def lists_for_existing(voc_root, lists_dir):
    """List files of an already-extracted VOC2012 folder; SegmentationClassAug/, when
    present, counts as the SBD augmentation. Returns {name: count}."""
    if not os.path.isdir(os.path.join(voc_root, "ImageSets", "Segmentation")):
        raise ToolkitError(f"{voc_root} is not a VOC2012 folder (no ImageSets/Segmentation); "
                           "pass the folder that holds JPEGImages/")
    aug = os.path.join(voc_root, "SegmentationClassAug")
    sbd_splits = None
    if os.path.isdir(aug):
        sbd_splits = (sorted(name[:-4] for name in os.listdir(aug) if name.endswith(".png")), [])
    return write_lists(voc_root, lists_dir, sbd_splits)


def fetch(dest, sbd=False, from_archive=None, sbd_archive=None, base_url=None, verify=True,
          keep_archives=False, lists_only=None, lists_dir=None, progress=True):
    """Fetch (or find) VOC 2012, optionally SBD, and write the list files; prints what it
    did, each list's image count, and a warning for each count that is not the published
    data set's (``voc_io.SPLIT_IMAGES``). ``lists_only``: an existing VOC2012 folder to write
    lists for, downloading nothing. Returns {list name: image count}."""
    lists_dir = lists_dir or os.path.join(dest, "lists")
    if lists_only:
        counts = lists_for_existing(lists_only, lists_dir)
    else:
        downloads = os.path.join(dest, "downloads")
        voc_root = voc_root_of(dest)
        fetched = []  # archives downloaded into DEST/downloads (deleted when all is done)
        if os.path.exists(voc_stamp(voc_root)):
            print(f"{voc_root} already extracted (delete {voc_stamp(voc_root)} to extract "
                  "again)")
        else:
            voc_tar = obtain(ARCHIVES["voc"], downloads, base_url, from_archive,
                             verify=verify, progress=progress)
            fetched += [] if from_archive else [voc_tar]
            extract_voc(voc_tar, dest, progress=progress,
                        advice=archive_advice(voc_tar, ARCHIVES["voc"], from_archive,
                                              "--from-archive"))
        sbd_splits = None
        if sbd or sbd_archive:
            sbd_splits = read_sbd_stamp(voc_root)
            if sbd_splits is not None:
                print(f"SBD already converted (delete {sbd_stamp(voc_root)} to convert again)")
            else:
                sbd_tgz = obtain(ARCHIVES["sbd"], downloads, base_url, sbd_archive,
                                 verify=verify, progress=progress)
                fetched += [] if sbd_archive else [sbd_tgz]
                sbd_splits = convert_sbd(sbd_tgz, voc_root, progress=progress,
                                         advice=archive_advice(sbd_tgz, ARCHIVES["sbd"],
                                                               sbd_archive, "--sbd-archive"))
        counts = write_lists(voc_root, lists_dir, sbd_splits)
        if not keep_archives:
            for path in fetched:
                os.unlink(path)
        print(f"data root: {voc_root}")
    for name, count in counts.items():
        print(f"{os.path.join(lists_dir, name + '.txt')}: {count} images")
    for line in count_warnings(counts, lists_dir):
        print(line, file=sys.stderr)
    return counts
