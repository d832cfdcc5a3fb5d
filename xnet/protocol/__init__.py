"""The ground floor: what a restoration task is and how it is scored under the published protocols —
tasks, degradations (noise, bicubic, rain), image I/O, BT.601 colour, MATLAB's bicubic and rounding,
per-image metrics, user errors and atomic files. It imports nothing else of xnet; everything else
builds on it."""
