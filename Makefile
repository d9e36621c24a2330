# One virtual environment per clone; every target creates it when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test test-fast lint services fruits-model distill-fruits distill-more-fruits distill-96-fruits distill-128-fruits probe-fruits train-fruits train-fruits-scratch ship-fruits evaluate-fruits clean

# The project itself is installed editable (--no-deps: requirements pin them), so that every entry point, the
# `celery` console script included, imports it from any working directory.
$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed

## The main job: the Gradio demo on the shipped fruit model (SQLite, no external service needed)
demo: venv batch-up
	$(BIN)/python demo.py

## The test suite (starts Redis/PostgreSQL when they are not running)
services:
	.ci/services.sh

# Two pytest-xdist workers, each taking whole test files: about half the suite waits on processes it started
# (workers, servers, a browser), so two keep both cores busy. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: venv services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,)

## The suite without the tests marked slow (they train or serve a real network, or start worker processes)
test-fast: venv services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

lint: venv
	$(BIN)/ruff check .

## Training the shipped model (no ImageNet weights can be downloaded here: distilled from ImageNet teachers).
## `make fruits-model` is the whole recipe, step after step: distil (64 px, then 64 px on fresh views, then 96 px,
## then 128 px), fit the head with 5-fold scene cross-validation over every real photo (which also picks the
## test-time augmentation and fits the temperature and the unknown statistics), ship, evaluate. About 6 hours on 2
## AVX-512 CPU cores; RESUME=1 continues interrupted steps.
FRUITS ?= ../shared/datasets/fruits
EXTRA ?= ../shared/datasets/grocery-other
TEACHERS ?= ../shared/teachers
TEACHER_FILES ?= mobilenet_v2_1.0_224_quant tf2_mobilenet_v2_1.0_224_ptq mobilenet_v1_1.0_224_quant_embedding_extractor
DISTILL_RUN ?= runs/distill-3t-64
DISTILL_MORE_RUN ?= runs/distill-3t-64-b
DISTILL_96_RUN ?= runs/distill-3t-96
DISTILL_128_RUN ?= runs/distill-3t-128
BACKBONE ?= $(DISTILL_128_RUN)/densenet121_distilled.weights.h5
INPUT_SIZE ?= 128
SCENE_TEACHER ?= $(TEACHERS)/mobilenet_v2_1.0_224_quant.tflite
FRUITS_RUN ?= runs/fruits-distilled

# Step 1 (label-free): a DenseNet121 backbone learns the three ImageNet teachers' features (docs/distillation.md)
distill-fruits: venv
	$(BIN)/python -m train.distill $(foreach t,$(TEACHER_FILES),--teacher $(TEACHERS)/$(t).tflite) \
	  --data $(FRUITS)/train --data $(EXTRA) --input-size 64 --views 4 --epochs 22 --out $(DISTILL_RUN) \
	  $(if $(RESUME),--resume,)

# Step 1b: the same distillation continued from step 1's backbone on 6 fresh views of every image (another seed),
# 40 more epochs at a lower peak learning rate
distill-more-fruits: venv
	$(BIN)/python -m train.distill $(foreach t,$(TEACHER_FILES),--teacher $(TEACHERS)/$(t).tflite) \
	  --data $(FRUITS)/train --data $(EXTRA) --init $(DISTILL_RUN)/densenet121_distilled.weights.h5 \
	  --input-size 64 --views 6 --seed 7 --lr 1e-3 --epochs 40 --out $(DISTILL_MORE_RUN) $(if $(RESUME),--resume,)

# Step 1c: continued at 96 px from step 1b's backbone (progressive resizing: the same kind of crop, rendered larger;
# docs/distillation.md), on 3 fresh views of every image; grocery-other's val split is left out, so that the unknown
# detection is measured on photos the backbone never saw
distill-96-fruits: venv
	$(BIN)/python -m train.distill $(foreach t,$(TEACHER_FILES),--teacher $(TEACHERS)/$(t).tflite) \
	  --data $(FRUITS)/train --data $(EXTRA)/train --init $(DISTILL_MORE_RUN)/densenet121_distilled.weights.h5 \
	  --input-size 96 --views 3 --seed 11 --lr 1e-3 --epochs 4 --threads 2 --out $(DISTILL_96_RUN) \
	  $(if $(RESUME),--resume,)

# Step 1d: continued at 128 px from step 1c's backbone, 3 fresh views of every image (another seed), 8 epochs. Chosen
# over 6 more epochs at 96 px and over 160 px by the scene cross-validation of a linear probe (docs/distillation.md)
distill-128-fruits: venv
	$(BIN)/python -m train.distill $(foreach t,$(TEACHER_FILES),--teacher $(TEACHERS)/$(t).tflite) \
	  --data $(FRUITS)/train --data $(EXTRA)/train --init $(DISTILL_96_RUN)/densenet121_distilled.weights.h5 \
	  --input-size 128 --views 3 --seed 29 --lr 1e-3 --epochs 8 --threads 2 --out $(DISTILL_128_RUN) \
	  $(if $(RESUME),--resume,)

# Step 2 (what ships): the fruit classifier as a linear head on the frozen distilled backbone (train.frozen, the head
# recipe of train.head), fitted on the whole training images and 4 augmented views of each. 5-fold cross-validation
# over every labelled real store photo (train and val), in scene folds (look-alike shots held out together, found by
# one teacher's features), gives the figures with their fold-to-fold spread and the out-of-fold answers the
# temperature and the unknown threshold are fitted on (a new visit's); the bundle folder also gets the val report,
# confusion matrix, metrics, and features.npz (what python -m train.teach refits from)
PROBE_RUN ?= runs/fruits-probe
FEATURE_CACHE ?= runs/feature-cache
probe-fruits: venv
	$(BIN)/python -m train.frozen --weights $(BACKBONE) --input-size $(INPUT_SIZE) --views 4 --folds 5 \
	  --scenes $(SCENE_TEACHER) --calibrate-on grocery --data $(FRUITS) --ood $(EXTRA)/val \
	  --cache $(FEATURE_CACHE) --out $(PROBE_RUN)

# Also measured against step 2 (not shipped): two-phase fine-tuning of the whole distilled backbone
train-fruits: venv
	$(BIN)/python -m train --fine-tune --data $(FRUITS) --extra-data $(EXTRA) \
	  --weights $(BACKBONE) --input-size $(INPUT_SIZE) --epochs 10 --head-epochs 2 \
	  --fine-tune-from conv1 --fine-tune-lr 1e-4 --out $(FRUITS_RUN) $(if $(RESUME),--resume,)

# The first shipped recipe, for comparison: DenseNet121 from scratch
train-fruits-scratch: venv
	$(BIN)/python -m train --fine-tune --data $(FRUITS) --extra-data $(EXTRA) --weights none --input-size 64 \
	  --epochs 17 --out runs/fruits-64 $(if $(RESUME),--resume,)

# Copy the probe bundle and the distillation stages' cards and curves into the shipped bundle folder
STAGES := $(DISTILL_RUN) $(DISTILL_MORE_RUN) $(DISTILL_96_RUN) $(DISTILL_128_RUN)
ship-fruits:
	rm -rf model/fruits-densenet121 && mkdir -p model/fruits-densenet121/distillation
	cp $(PROBE_RUN)/* model/fruits-densenet121/
	n=0; for run in $(STAGES); do n=$$((n+1)); \
	  cp $$run/card.json model/fruits-densenet121/distillation/stage$$n-card.json; \
	  cp $$run/history.csv model/fruits-densenet121/distillation/stage$$n-history.csv; done
	$(BIN)/python -m train.plots --stages $(foreach r,$(STAGES),$(r)/history.csv) --out model/fruits-densenet121/loss.png

evaluate-fruits: venv
	mkdir -p runs/evaluate-fruits
	$(BIN)/python -m train.evaluate --model model/fruits-densenet121 --data $(FRUITS)/val --ood $(EXTRA)/val \
	  --out runs/evaluate-fruits --json runs/evaluate-fruits/metrics.json

fruits-model:
	$(MAKE) distill-fruits && $(MAKE) distill-more-fruits && $(MAKE) distill-96-fruits && $(MAKE) distill-128-fruits
	$(MAKE) probe-fruits && $(MAKE) ship-fruits && $(MAKE) evaluate-fruits

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## Demo benchmark: HTTP latency vs the bare model call, batched vs unbatched throughput (SMALL=1: untrained 64px net)
.PHONY: bench-demo
bench-demo: venv
	$(BIN)/python -m benchmarks.demo $(if $(SMALL),--small,)

## Batch path on this machine: a local redis-server if none runs, SQLite, one Celery worker
.PHONY: batch batch-up batch-down bench-batch
batch: venv
	$(BIN)/python -m worker.dev

# In the background (log: data/worker.log); never fails `make demo`, which works without it for single images
batch-up: venv
	-$(BIN)/python -m worker.dev --background

batch-down:
	-$(BIN)/python -m worker.dev --stop

## Teaching benchmark: the k-shot curve on held-out scene folds of the real photos, and a new class taught
## (docs/training.md#teaching); FEATURE_CACHE keeps the grocery-other features between runs
.PHONY: bench-teach
bench-teach: venv
	$(BIN)/python -m benchmarks.teach_curve --other $(EXTRA) --cache $(FEATURE_CACHE)

## Batch benchmark: bare forward pass vs folder-to-database pipeline vs per-image model.predict, the pipeline on
## 320x240 and on 4000x3000 photos, each between two forward passes (PHONE=N phone photos; SMALL=1: quick)
bench-batch: venv
	$(BIN)/python -m benchmarks.batch $(if $(SMALL),--images 64 --phone-images 8 --input-size 64,) \
		$(if $(PHONE),--phone-images $(PHONE),)

## Object storage (docs/batch.md#folders-in-object-storage): one worker's img/s reading photos from a loopback S3
## (moto) vs the same photos on local disk, and listing + submitting OBJECTS small objects (time, peak RSS)
.PHONY: bench-s3
bench-s3: venv
	$(BIN)/python -m benchmarks.object_store $(if $(IMAGES),--images $(IMAGES),) \
	  $(if $(OBJECTS),--objects $(OBJECTS),)

## Inference runtimes (model/runtimes.py): bare forward img/s of every installed runtime (tf, onnx), the
## folder-to-database pipeline on the default runtime, the naive per-image loop and their ratios, at 224px on a
## fresh DenseNet121 (SIZE=64, MODEL=bundle, IMAGES=N, RUNTIME=tf|onnx). SCALE=20000 adds the worker-memory check.
.PHONY: bench
bench: venv
	$(BIN)/python -m benchmarks.batch $(if $(MODEL),--model $(MODEL),--input-size $(or $(SIZE),224)) \
	  $(if $(IMAGES),--images $(IMAGES),) $(if $(SCALE),--scale $(SCALE),)

## The GPU worker path on the GPU present: TensorFlow (fp32, mixed_float16) and ONNX Runtime CUDA, forward and
## folder-to-database img/s at 224px, batch 64 and 128, and proof that the forward pass ran on the GPU (exit 2: none)
.PHONY: bench-gpu
bench-gpu: venv
	$(BIN)/python -m benchmarks.gpu $(if $(IMAGES),--images $(IMAGES),)

## docker-compose.yml for real (minutes, needs Docker; not part of `make test`): base images (stand-ins where none
## can be pulled), build, up, photos and bad files submitted as documented, db.report, the demo's API, two workers,
## a host-side submit through docker-compose.host.yml, down -v
.PHONY: compose-check
compose-check: venv
	$(BIN)/python -m benchmarks.compose_check

## The Hugging Face Space, simulated (minutes, mostly pip; not part of `make test`): the pushed files in a temporary
## folder, a fresh venv from requirements.txt only, `python demo.py` as a Space runs it (SPACE_ID set, no Redis), one
## photo and one upload of several photos through the HTTP API
.PHONY: space-check
space-check: venv
	$(BIN)/python -m benchmarks.space_check $(if $(KEEP),--keep,)
