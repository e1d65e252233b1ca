#!/usr/bin/env bash
# Regenerate samples/ with espeak-ng and sox (Debian: apt-get install espeak-ng sox).
set -euo pipefail
cd "$(dirname "$0")/../samples"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us+f3 -s 150 -w "$tmp/hello.wav" "Hello! My name is Alice. I can say anything you give me."
sox "$tmp/hello.wav" -r 16000 -c 1 -b 16 hello.wav norm -1
espeak-ng -v en-gb+f2 -s 140 -w "$tmp/p1.wav" "One, two, three."
espeak-ng -v en-gb+f2 -s 140 -w "$tmp/p2.wav" "Now a pause."
espeak-ng -v en-gb+f2 -s 140 -w "$tmp/p3.wav" "And here I am again."
for p in p1 p2; do sox "$tmp/$p.wav" "$tmp/${p}pad.wav" pad 0 0.9; done
sox "$tmp/p1pad.wav" "$tmp/p2pad.wav" "$tmp/p3.wav" "$tmp/pauses22.wav"
sox "$tmp/pauses22.wav" -r 16000 -c 1 -b 16 pauses.wav norm -1
espeak-ng -v en-us+m3 -s 160 -w "$tmp/stereo.wav" "This one is stereo, at forty four point one kilohertz."
sox "$tmp/stereo.wav" -r 44100 -c 2 -b 16 stereo_44k.flac norm -3 remix 1 1v0.8
