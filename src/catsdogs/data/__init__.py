"""The images, from the source to the split: fetching and generating archives, reading and checking their
members, the exclusion list, decoding, the decoded-image cache and the split. No Keras."""
