# One virtual environment per clone; every target creates it when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test lint services train-fruits evaluate-fruits clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

## The main job: the Gradio demo on the shipped fruit model (SQLite, no external service needed)
demo: venv
	$(BIN)/python demo.py

## The test suite (starts Redis/PostgreSQL when they are not running)
services:
	.ci/services.sh

test: venv services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

## Training the shipped model (from scratch: no ImageNet weights can be downloaded here)
FRUITS ?= ../shared/datasets/fruits
EXTRA ?= ../shared/datasets/grocery-other
train-fruits: venv
	$(BIN)/python -m train --data $(FRUITS) --extra-data $(EXTRA) --weights none --input-size 64 \
	  --epochs 20 --out runs/fruits-64 $(if $(RESUME),--resume,)

evaluate-fruits: venv
	$(BIN)/python -m train.evaluate --model model/fruits-densenet121 --data $(FRUITS)/val

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
