"""Files that stages hand to each other (prepared dialogues, run folders): each has one module that reads and writes it.

Shared layer: modules here import only kefu.types/paths/heap/text, never a stage package.
"""
