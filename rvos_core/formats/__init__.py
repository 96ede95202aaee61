"""Dataset readers/writers (MeViS, Ref-YouTube-VOS, DAVIS)."""
