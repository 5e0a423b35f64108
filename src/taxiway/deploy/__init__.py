"""Deploys: releases, the release command, machine checks, strategies, rollback.

The deployer changes machines only through the runtime's API (`AppRuntime`,
`SupervisedMachine`); it never talks to drivers, so it works the same on every driver.
"""
