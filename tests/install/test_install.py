"""podtrace installed as a user installs it, on the local cluster: the image imported
into its containerd, `kubectl apply -k` of manifests/, then the shared checks of
harness.install_checks in order (the tests share one installation)."""

from __future__ import annotations

from harness import install_checks
from harness.install_checks import Installation


def test_operator_and_agent_run_as_installed(installed: Installation) -> None:
    install_checks.check_running_as_installed(installed)


def test_nodetracer_ready_with_bcc(installed: Installation) -> None:
    install_checks.check_nodetracer_ready_with_bcc(installed)


def test_workload_traced_exactly_through_the_installed_pods(installed: Installation) -> None:
    install_checks.check_workload_traced_exactly(installed)


def test_uninstall_leaves_nothing(installed: Installation) -> None:
    install_checks.check_uninstall_leaves_nothing(installed)
