"""The serve face: a FastAPI app over the call pipeline (helper srv's; stand-in until merged)."""
