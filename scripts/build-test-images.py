#!/usr/bin/python3
"""Write capsa's test images as OCI image layouts (python3 stdlib + zstd CLI).

Normally run through scripts/build-test-images.sh, which fetches the inputs
(busybox binaries, the Debian rootfs tarball) and calls:

    build-test-images.py --out OUTDIR --busybox-amd64 FILE
        [--busybox-arm64 FILE] [--debian-tar FILE] [--force]

Layouts written (one OCI image layout per repository, tags as
org.opencontainers.image.ref.name annotations in index.json):

    OUTDIR/busybox    busybox:latest           (OCI manifest, gzip layer)
    OUTDIR/layers     layers:latest            (3 layers; see OUTDIR/layers.expected)
    OUTDIR/multiarch  multiarch:latest         (OCI image index amd64 + arm64)
    OUTDIR/compress   compress:gzip|zstd|none  (same rootfs, 3 layer encodings)
    OUTDIR/debian     debian:bookworm          (only with --debian-tar)

Everything is reproducible: fixed timestamps, sorted entries, gzip mtime 0.
Each layout carries a .capsa-stamp (hash of this script + inputs); a layout
whose stamp matches is not rebuilt.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
REF_NAME = "org.opencontainers.image.ref.name"

# Applets linked in /bin of the busybox rootfs (the first line is the set the
# tests rely on; the rest are conveniences).
APPLETS = sorted(set("""
sh ls cat echo true false sleep env id httpd nc wget mkdir rm touch
cp mv ln chmod chown stat head tail grep sed wc find printf test hostname
uname ps kill mount umount pwd whoami date seq sha256sum tee dd yes
""".split()))

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nnobody:x:65534:\n"


def log(msg):
    sys.stderr.write("build-test-images: %s\n" % msg)
    sys.stderr.flush()


def canon_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------
# Tar entries
# ---------------------------------------------------------------------------
class Entry:
    """One tar member. kind: dir | file | symlink | hardlink."""

    def __init__(self, path, kind, mode, uid=0, gid=0, data=b"", target=None,
                 xattrs=None):
        self.path = path.strip("/")
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.data = data
        self.target = target
        self.xattrs = xattrs or {}

    def tarinfo(self):
        ti = tarfile.TarInfo(self.path)
        ti.mode = self.mode
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname = ti.gname = ""
        ti.mtime = EPOCH
        if self.kind == "dir":
            ti.type = tarfile.DIRTYPE
        elif self.kind == "file":
            ti.type = tarfile.REGTYPE
            ti.size = len(self.data)
        elif self.kind == "symlink":
            ti.type = tarfile.SYMTYPE
            ti.linkname = self.target
        elif self.kind == "hardlink":
            ti.type = tarfile.LNKTYPE
            ti.linkname = self.target.strip("/")
        else:
            raise ValueError(self.kind)
        if self.xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in self.xattrs.items()}
        return ti


def D(path, mode=0o755, uid=0, gid=0):
    return Entry(path, "dir", mode, uid, gid)


def F(path, data, mode=0o644, uid=0, gid=0, xattrs=None):
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", mode, uid, gid, data=data, xattrs=xattrs)


def L(path, target):
    return Entry(path, "symlink", 0o777, target=target)


def H(path, target):
    return Entry(path, "hardlink", 0o644, target=target)


def make_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = e.tarinfo()
            tf.addfile(ti, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def busybox_rootfs(busybox_bin, arch):
    with open(busybox_bin, "rb") as fh:
        bb = fh.read()
    entries = [
        D("bin"),
        F("bin/busybox", bb, 0o755),
    ]
    entries += [L("bin/" + a, "busybox") for a in APPLETS]
    entries += [
        D("dev"),
        D("etc"),
        F("etc/arch", arch + "\n"),
        F("etc/group", GROUP),
        F("etc/passwd", PASSWD),
        D("home"),
        D("proc"),
        D("root", 0o700),
        D("sys"),
        D("tmp", 0o1777),
        D("usr"),
        D("usr/bin"),
        D("var"),
        D("var/www"),
    ]
    return entries


def sort_entries(entries):
    # Parents before children; within a directory, whiteouts first.
    def key(e):
        parts = e.path.split("/")
        return [(0 if p.startswith(".wh.") else 1, p) for p in parts]
    return sorted(entries, key=key)


# ---------------------------------------------------------------------------
# OCI layout writer
# ---------------------------------------------------------------------------
class Layout:
    def __init__(self, path):
        self.path = path
        self.refs = []  # (descriptor, ref name)
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as fh:
            fh.write('{"imageLayoutVersion":"1.0.0"}')

    def blob_path(self, digest):
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def add_blob(self, data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        p = self.blob_path(digest)
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as fh:
                fh.write(data)
            os.replace(p + ".tmp", p)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_blob_file(self, src, media_type):
        h = hashlib.sha256()
        size = 0
        with open(src, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
        digest = "sha256:" + h.hexdigest()
        shutil.move(src, self.blob_path(digest))
        return {"mediaType": media_type, "digest": digest, "size": size}

    def add_json(self, obj, media_type):
        return self.add_blob(canon_json(obj), media_type)

    def tag(self, desc, ref):
        d = dict(desc)
        d["annotations"] = {REF_NAME: ref}
        self.refs.append(d)

    def finish(self):
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": self.refs}
        with open(os.path.join(self.path, "index.json"), "wb") as fh:
            fh.write(canon_json(index))


def compress(tar_bytes, kind):
    if kind == "gzip":
        return gzip.compress(tar_bytes, compresslevel=6, mtime=0), MT_GZIP
    if kind == "zstd":
        out = subprocess.run(["zstd", "-q", "-3", "-c", "--no-progress"], input=tar_bytes,
                             stdout=subprocess.PIPE, check=True).stdout
        return out, MT_ZSTD
    if kind == "none":
        return tar_bytes, MT_TAR
    raise ValueError(kind)


def build_image(layout, layers, arch, cmd, labels, history, compression="gzip",
                variant=None, env=None):
    """layers: list of uncompressed tar bytes. Returns manifest descriptor."""
    layer_descs, diff_ids = [], []
    for tar_bytes in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
        blob, mt = compress(tar_bytes, compression)
        layer_descs.append(layout.add_blob(blob, mt))
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": env or [PATH_ENV],
            "Cmd": cmd,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": h,
                     "comment": "capsa test fixture"} for h in history],
    }
    if variant:
        config["variant"] = variant
    cfg_desc = layout.add_json(config, MT_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": cfg_desc,
        "layers": layer_descs,
    }
    desc = layout.add_json(manifest, MT_MANIFEST)
    platform = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    return desc, platform


# ---------------------------------------------------------------------------
# Expected tree for layers:latest (applies layers like an OCI unpacker)
# ---------------------------------------------------------------------------
def apply_layers(layer_entry_lists):
    tree = {}  # path -> dict

    def remove(path):
        for p in [p for p in tree if p == path or p.startswith(path + "/")]:
            del tree[p]

    for entries in layer_entry_lists:
        added = set()
        for e in entries:
            parent, _, base = e.path.rpartition("/")
            if base == ".wh..wh..opq":
                for p in [p for p in tree if parent == "" or p.startswith(parent + "/")]:
                    if p not in added and p != parent:
                        del tree[p]
                continue
            if base.startswith(".wh."):
                remove((parent + "/" if parent else "") + base[4:])
                continue
            old = tree.get(e.path)
            if old is not None and not (old["kind"] == "dir" and e.kind == "dir"):
                remove(e.path)
            if e.kind == "hardlink":
                tgt = tree[e.target.strip("/")]
                tree[e.path] = dict(tgt, kind="hardlink", target="/" + e.target.strip("/"))
            else:
                tree[e.path] = {"kind": e.kind, "mode": e.mode, "uid": e.uid,
                                "gid": e.gid, "target": e.target, "data": e.data}
            added.add(e.path)
    lines = ["# path type mode uid gid link-target sha256-of-content "
             "(type: dir|file|symlink|hardlink; hardlink = regular file sharing "
             "the inode of link-target; '-' = not applicable)"]
    for path in sorted(tree):
        t = tree[path]
        kind = t["kind"]
        sha = hashlib.sha256(t["data"]).hexdigest() if kind in ("file", "hardlink") else "-"
        target = t["target"] if kind in ("symlink", "hardlink") else "-"
        lines.append("/%s %s %04o %d %d %s %s" % (path, kind, t["mode"], t["uid"],
                                                  t["gid"], target, sha))
    return "\n".join(lines) + "\n"


def layers_image_entries(busybox_amd64):
    layer1 = busybox_rootfs(busybox_amd64, "amd64") + [
        D("data"),
        F("data/a", "a\n", 0o644, 1000, 1000),
        F("data/b", "b\n", 0o644, 65534, 65534),
        H("data/hard", "data/a"),
        D("data/sub", 0o750, 1000, 1000),
        F("data/sub/one", "one\n", 0o600, 1000, 1000),
        F("data/sub/two", "two\n", 0o644, 0, 0),
        D("data/gone"),
        F("data/gone/file", "gone\n"),
        D("data/private", 0o700, 65534, 65534),
        F("data/xattr", "xattr\n", 0o644, xattrs={"user.capsa.test": "hello"}),
        F("usr/bin/su-test", "#!/bin/sh\necho su-test\n", 0o4755, 0, 0),
        F("usr/bin/sg-test", "#!/bin/sh\necho sg-test\n", 0o2755, 0, 1000),
        L("link-abs", "/data/a"),
        L("link-rel", "data/b"),
        D("dir2file"),
        F("dir2file/inner", "inner\n"),
        F("file2dir", "file\n"),
    ]
    layer2 = [
        D("data"),
        F("data/.wh.b", b"", 0o644),
        F("data/.wh.gone", b"", 0o644),
        F("data/c", "c\n", 0o644, 0, 0),
        D("data/sub", 0o750, 1000, 1000),
        F("data/sub/.wh..wh..opq", b"", 0o644),
        F("data/sub/new", "new\n", 0o644, 1000, 1000),
    ]
    layer3 = [
        D("etc"),
        F("etc/layer3", "layer3\n"),
        F("dir2file", "now a file\n"),
        D("file2dir", 0o755),
        F("file2dir/inner", "now a dir\n"),
    ]
    return [sort_entries(layer1), sort_entries(layer2), sort_entries(layer3)]


# ---------------------------------------------------------------------------
# Debian rootfs repacking
# ---------------------------------------------------------------------------
def repack_debian(src_tar, dst_tar):
    """Copy mmdebstrap's tarball, dropping device nodes under /dev and
    clamping mtimes to EPOCH, so the layer is unpackable rootless and stable."""
    with tarfile.open(src_tar, "r:*") as src, \
            tarfile.open(dst_tar, "w", format=tarfile.PAX_FORMAT) as dst:
        for ti in src:
            name = ti.name
            if name.startswith("./"):
                name = name[2:]
            if name in ("", "."):
                continue
            if name.startswith("dev/") and name != "dev/":
                continue
            if ti.ischr() or ti.isblk() or ti.isfifo():
                continue
            ti.name = name
            if ti.islnk() and ti.linkname.startswith("./"):
                ti.linkname = ti.linkname[2:]
            ti.mtime = min(int(ti.mtime), EPOCH)
            for k in ("mtime", "atime", "ctime"):
                ti.pax_headers.pop(k, None)
            ti.uname = ti.gname = ""
            dst.addfile(ti, src.extractfile(ti) if ti.isreg() else None)


def gzip_file(src, dst):
    with open(src, "rb") as fi, open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6,
                           mtime=0) as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def stamp_for(*parts):
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as fh:
        h.update(fh.read())
    for p in parts:
        h.update(b"\0" + str(p).encode())
    return h.hexdigest()


def cached(out, name, stamp, force):
    path = os.path.join(out, name)
    try:
        with open(os.path.join(path, ".capsa-stamp")) as fh:
            ok = fh.read().strip() == stamp
    except OSError:
        ok = False
    if ok and not force and os.path.exists(os.path.join(path, "index.json")):
        log("%s: up to date" % name)
        return True
    return False


class Staged:
    """Build a layout in a temp dir next to its final place, then swap it in."""

    def __init__(self, out, name, stamp):
        self.final = os.path.join(out, name)
        self.tmp = tempfile.mkdtemp(prefix=".%s." % name, dir=out)
        os.chmod(self.tmp, 0o755)
        self.stamp = stamp
        self.layout = Layout(self.tmp)

    def commit(self):
        self.layout.finish()
        with open(os.path.join(self.tmp, ".capsa-stamp"), "w") as fh:
            fh.write(self.stamp + "\n")
        if os.path.exists(self.final):
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)

    def abort(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def build(out, name, stamp, force, fn):
    if cached(out, name, stamp, force):
        return
    log("%s: building" % name)
    st = Staged(out, name, stamp)
    try:
        fn(st.layout)
        st.commit()
    except BaseException:
        st.abort()
        raise
    log("%s: done -> %s" % (name, st.final))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--busybox-amd64", required=True)
    ap.add_argument("--busybox-arm64", help="arm64 busybox binary; if absent the "
                    "arm64 variant holds only /etc/arch")
    ap.add_argument("--busybox-version", default="unknown")
    ap.add_argument("--debian-tar")
    ap.add_argument("--force", action="store_true")
    opts = ap.parse_args()
    out = opts.out
    os.makedirs(out, exist_ok=True)
    bb64 = sha256_file(opts.busybox_amd64)
    bbarm = sha256_file(opts.busybox_arm64) if opts.busybox_arm64 else "none"
    bb_hist = "busybox rootfs (Debian busybox-static %s)" % opts.busybox_version

    # Shared rootfs tars (deterministic, so identical layers share digests).
    rootfs_amd64 = make_tar(sort_entries(busybox_rootfs(opts.busybox_amd64, "amd64")))

    def busybox(layout):
        desc, _ = build_image(layout, [rootfs_amd64], "amd64", ["sh"],
                              {"org.capsa.test": "busybox"}, [bb_hist])
        layout.tag(desc, "latest")

    build(out, "busybox", stamp_for(bb64), opts.force, busybox)

    layer_entries = layers_image_entries(opts.busybox_amd64)

    def layers(layout):
        tars = [make_tar(es) for es in layer_entries]
        desc, _ = build_image(
            layout, tars, "amd64", ["sh"], {"org.capsa.test": "layers"},
            [bb_hist + " + /data test tree, setuid/setgid files, links, xattr",
             "whiteouts: /data/b, /data/gone; opaque /data/sub; new /data/c, /data/sub/new",
             "/etc/layer3; /dir2file dir->file; /file2dir file->dir"])
        layout.tag(desc, "latest")

    build(out, "layers", stamp_for(bb64), opts.force, layers)
    expected = apply_layers(layer_entries)
    exp_path = os.path.join(out, "layers.expected")
    with open(exp_path + ".tmp", "w") as fh:
        fh.write(expected)
    os.replace(exp_path + ".tmp", exp_path)

    def multiarch(layout):
        amd_desc, amd_plat = build_image(layout, [rootfs_amd64], "amd64", ["sh"],
                                         {"org.capsa.test": "multiarch"}, [bb_hist])
        if opts.busybox_arm64:
            arm_tar = make_tar(sort_entries(busybox_rootfs(opts.busybox_arm64, "arm64")))
            arm_hist = bb_hist.replace("rootfs", "rootfs arm64")
        else:
            arm_tar = make_tar(sort_entries([D("etc"), F("etc/arch", "arm64\n")]))
            arm_hist = "placeholder arm64 layer: /etc/arch only"
        arm_desc, arm_plat = build_image(layout, [arm_tar], "arm64", ["sh"],
                                         {"org.capsa.test": "multiarch"}, [arm_hist],
                                         variant="v8")
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [dict(amd_desc, platform=amd_plat),
                          dict(arm_desc, platform=arm_plat)],
        }
        layout.tag(layout.add_json(index, MT_INDEX), "latest")

    build(out, "multiarch", stamp_for(bb64, bbarm), opts.force, multiarch)

    def compress_images(layout):
        for kind in ("gzip", "zstd", "none"):
            desc, _ = build_image(layout, [rootfs_amd64], "amd64", ["sh"],
                                  {"org.capsa.test": "compress",
                                   "org.capsa.compression": kind},
                                  [bb_hist], compression=kind)
            layout.tag(desc, kind)

    build(out, "compress", stamp_for(bb64), opts.force, compress_images)

    if opts.debian_tar:
        def debian(layout):
            tmpdir = tempfile.mkdtemp(dir=out, prefix=".debian-work.")
            try:
                plain = os.path.join(tmpdir, "layer.tar")
                gz = os.path.join(tmpdir, "layer.tar.gz")
                log("debian: repacking %s" % opts.debian_tar)
                repack_debian(opts.debian_tar, plain)
                diff_id = sha256_file(plain)
                log("debian: compressing layer (%d MB)" % (os.path.getsize(plain) >> 20))
                gzip_file(plain, gz)
                layer = layout.add_blob_file(gz, MT_GZIP)
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
            config = {
                "created": CREATED,
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": [PATH_ENV], "Cmd": ["bash"],
                           "Labels": {"org.capsa.test": "debian"}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created": CREATED,
                             "created_by": "mmdebstrap --variant=minbase bookworm",
                             "comment": "capsa test fixture"}],
            }
            cfg = layout.add_json(config, MT_CONFIG)
            manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                        "config": cfg, "layers": [layer]}
            layout.tag(layout.add_json(manifest, MT_MANIFEST), "bookworm")

        st = os.stat(opts.debian_tar)
        build(out, "debian", stamp_for(st.st_size, int(st.st_mtime)), opts.force, debian)


if __name__ == "__main__":
    main()
