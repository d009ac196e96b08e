# nnopt: the two entry points of the README. Both install what is missing,
# configure and build first.
BUILD ?= build
.PHONY: all build demo test bench clean

all: build

build:
	scripts/setup.sh $(BUILD)

demo: build
	$(BUILD)/nnopt demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j2 --timeout 600

bench: build
	cmake --build $(BUILD) --target benches -j$${NNOPT_JOBS:-$$(nproc)}
	bench/run_all.sh $(BUILD)

clean:
	rm -rf $(BUILD)
