// Package hwtest gives the driver tests real kernel parts where the running
// kernel has them: simulated GPIO chips from the gpio-sim module (configfs,
// /sys/kernel/config/gpio-sim) with real /dev/gpiochipN character devices,
// and /dev/uinput for virtual keyboards with real /dev/input/eventN nodes.
//
// # Caveats
//
// These need root and a kernel built with the feature (CONFIG_GPIO_SIM,
// CONFIG_CONFIGFS_FS; CONFIG_INPUT_UINPUT for the uinput tests in
// driver/scanner). Many kernels lack them: kernels for small VMs are often
// built without GPIO or module support at all. A test that cannot have the
// part skips with a message saying what is missing; with the named
// environment variable set (FAREGO_REQUIRE_GPIO_SIM=1,
// FAREGO_REQUIRE_UINPUT=1) it fails instead. .ci/run sets them when the
// kernel's configuration says the feature is there, so CI fails rather than
// skips wherever the part could be had. FAREGO_CI alone does not make them
// fail: CI's own machines may run a kernel that cannot have them.
package hwtest
