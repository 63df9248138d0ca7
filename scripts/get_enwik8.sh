#!/usr/bin/env bash
# scripts/get_enwik8.sh [OUT_DIR]: download enwik8 and store it as OUT_DIR/enwik8.gz.
#
# enwik8 is the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize /
# Large Text Compression Benchmark). It is published as a zip at URL below. The
# script verifies the md5 of the unzipped 100,000,000-byte file against the published
# value, recompresses it with gzip -9 (the trainer reads .gz directly with zlib), and
# removes the zip and the raw file. OUT_DIR defaults to the current directory.
#
# Needs: curl or wget, unzip, gzip, md5sum (or md5 on BSD/macOS).
set -euo pipefail

url="http://mattmahoney.net/dc/enwik8.zip"
want_md5="a1fa5ffddb56f4953e226637dabbb36a"   # md5 of the unzipped enwik8
want_size=100000000

die() { echo "get_enwik8: error: $*" >&2; exit 1; }

out_dir="${1:-.}"
out="$out_dir/enwik8.gz"

if [[ -e "$out" ]]; then
    echo "get_enwik8: $out already exists; remove it to download again"
    exit 0
fi

# Check every tool before downloading 36 MB, so a missing one fails fast.
if command -v curl >/dev/null 2>&1; then
    fetch() { curl -fL --retry 2 --connect-timeout 20 -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
    fetch() { wget --tries=3 --timeout=20 -O "$2" "$1"; }
else
    die "neither curl nor wget is installed; install one (apt-get install curl)"
fi
command -v unzip >/dev/null 2>&1 || die "unzip is not installed (apt-get install unzip)"
command -v gzip >/dev/null 2>&1 || die "gzip is not installed (apt-get install gzip)"
if command -v md5sum >/dev/null 2>&1; then
    md5_of() { md5sum "$1" | cut -d' ' -f1; }
elif command -v md5 >/dev/null 2>&1; then
    md5_of() { md5 -q "$1"; }
else
    die "neither md5sum nor md5 is installed; cannot verify the download"
fi

mkdir -p "$out_dir" || die "cannot create $out_dir"

# Work in a scratch directory inside OUT_DIR (same filesystem, so the final mv is
# atomic and a half-written enwik8.gz never appears); removed on any exit.
tmp=$(mktemp -d "$out_dir/.enwik8.XXXXXX") || die "cannot create a scratch directory in $out_dir"
trap 'rm -rf "$tmp"' EXIT

echo "get_enwik8: downloading $url"
fetch "$url" "$tmp/enwik8.zip" ||
    die "download of $url failed (offline, or the server is unreachable?); nothing was written"

unzip -q "$tmp/enwik8.zip" enwik8 -d "$tmp" ||
    die "unzip of the downloaded file failed (incomplete download, or not a zip?)"
[[ -f "$tmp/enwik8" ]] || die "the zip does not contain a file named enwik8"

size=$(wc -c < "$tmp/enwik8" | tr -d ' ')
[[ "$size" == "$want_size" ]] ||
    die "enwik8 is $size bytes, expected $want_size; the download is not the published enwik8"

got_md5=$(md5_of "$tmp/enwik8")
[[ "$got_md5" == "$want_md5" ]] ||
    die "md5 mismatch: got $got_md5, expected $want_md5; the download is corrupt or not enwik8"
echo "get_enwik8: md5 ok ($want_md5)"

echo "get_enwik8: compressing with gzip -9"
gzip -9 -c "$tmp/enwik8" > "$tmp/enwik8.gz" || die "gzip failed (disk full?)"
gzip -t "$tmp/enwik8.gz" || die "the written gzip file does not verify"
mv "$tmp/enwik8.gz" "$out" || die "cannot move the result to $out"

echo "get_enwik8: wrote $out ($(wc -c < "$out" | tr -d ' ') bytes)"
