"""The demo's web views (Gradio): each module builds one tab or view and holds its handlers; `demo.py` composes
them into the app. Not named `demo`: that would shadow `demo.py`, the Hugging Face Space's `app_file`."""
