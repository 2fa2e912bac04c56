"""One module per stage of dvc.yaml, each a `main()` that reads like the stage's description. Stages never
import each other: they meet only through the files dvc.yaml declares."""
