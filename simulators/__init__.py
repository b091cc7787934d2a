"""Bundled simulators of booster station BS-01: the plant of docs/plant.md behind simulated PLCs (Modbus TCP and
OPC UA on 127.0.0.1, serving the shared point map), with faults on demand. See docs/simulators.md.

Entry points: ``simulators.plant_simulator.PlantSimulator`` (in-process, async), ``gateway-sim`` (``simulators.cli``),
``simulators.scoring.run_baseline`` and ``simulators.scoring.PlantScore`` (the figures a controller is scored by).
"""
