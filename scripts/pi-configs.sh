# The Raspberry Pi CPUs as qemu-user runs them, for scripts/check-aarch64.sh and scripts/pi-ratios.sh (sourced).
# NAME=CPU[,VAR=VALUE...]. QEMU 7.2 does not emulate /proc/cpuinfo, so tract would read the host's "CPU part";
# the override gives it the Pi's (0xd08 A72, 0xd0b A76) so its CPU-family branch is the one a Pi takes.
pi_configs=(
  "pi4-cortex-a72=cortex-a72,TRACT_CPU_AARCH64_OVERRIDE_CPU_PART=0xd08"
  "pi5-cortex-a76=cortex-a76,TRACT_CPU_AARCH64_OVERRIDE_CPU_PART=0xd0b"
  # The Pi 5 without its SDOT int8 kernels (tract's fallback path), checked for agreement only.
  "pi5-a76-no-dotprod=cortex-a76,TRACT_CPU_AARCH64_OVERRIDE_CPU_PART=0xd0b,TRACT_DOTPROD_DISABLE=1"
)
