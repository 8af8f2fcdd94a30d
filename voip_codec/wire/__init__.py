"""The bytes that cross a network or a disk: packets (:mod:`.packet`), packed tokens
(:mod:`.bitpack`) and token files (:mod:`.tokenfile`). Standard library and numpy only."""
