# One image for every role (demo, worker, flower, migrations); docker-compose.yml picks the command.
# GPU build: docker compose --profile gpu build  (TF_PACKAGE="tensorflow[and-cuda]==2.21.0")
FROM python:3.11-slim

ARG TF_PACKAGE=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt \
 && if [ -n "$TF_PACKAGE" ]; then pip uninstall -y tensorflow-cpu && pip install "$TF_PACKAGE"; fi

COPY . .
# Editable, so that the code, the shipped model and data/ stay in /app where every service runs, and the `celery`
# console script imports the project from any directory.
RUN pip install --no-deps -e .
# Convert the shipped model to ONNX once, at build time (the classifier, and its Grad-CAM twin for the demo):
# every container then finds the cached conversions.
RUN python -c "from model import load_classifier; from model.gradcam import GradCAM; \
GradCAM.for_classifier(load_classifier(runtime='onnx'))" || true
# data/models exists in the image, owned by app: the `models` volume mounted there starts with that owner.
RUN useradd --create-home --uid 1000 app && mkdir -p /app/data/models && chown app /app/data /app/data/models
USER app

EXPOSE 7860
CMD ["python", "demo.py", "--host", "0.0.0.0"]
