"""The live server (design.md section 14): `lipsync serve`, one process and one runtime for every session."""
