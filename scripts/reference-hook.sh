#!/usr/bin/env bash
# Reference hook: coral-nfd's label rules written the way a user would write an NFD
# hook in plain bash (cat, readlink, stat). It exists to be measured against
# (scripts/bench.py) and is checked to print the same label lines as coral-nfd on every
# fixture (tests/it/reference_hook.rs). Roots come from the same variables coral-nfd reads.
set -u
SYS=${CORAL_NFD_SYSFS_ROOT:-/sys}
DEV=${CORAL_NFD_DEV_ROOT:-/dev}
P=${CORAL_NFD_LABEL_PREFIX:-feature.node.kubernetes.io/}

pcie=0 pcie_ready=0 usb=0 usb_ready=0
declare -A apex_ready=()

driver_loaded=false
[ -d "$SYS/bus/pci/drivers/apex" ] && driver_loaded=true

# A character device whose major:minor is the content of a `dev` file.
node_ok() { # node devfile
  [ -c "$1" ] || return 1
  [ "$(stat -L -c '%Hr:%Lr' "$1")" = "$(cat "$2" 2>/dev/null)" ]
}

version=$(cat "$SYS/module/apex/version" 2>/dev/null)

for d in "$SYS"/bus/pci/devices/*; do
  [ "$(cat "$d/vendor" 2>/dev/null)" = "0x1ac1" ] || continue
  [ "$(cat "$d/device" 2>/dev/null)" = "0x089a" ] || continue
  pcie=$((pcie + 1))
  drv=$(readlink -f "$d/driver" 2>/dev/null) || continue
  [ -d "$drv" ] && [ "${drv##*/}" = "apex" ] || continue
  fn=$(readlink -f "$d")
  for a in "$SYS"/class/apex/apex_*; do
    [ -e "$a" ] || continue
    [ "$(readlink -f "$a/device" 2>/dev/null)" = "$fn" ] || continue
    n=${a##*/}
    # The old staging driver (apex 1.0): the current runtime cannot use it.
    [ "$version" = "1.0" ] && break
    [ "$(cat "$a/driver_version" 2>/dev/null)" = "1.0" ] && break
    node_ok "$DEV/$n" "$a/dev" || break
    if [ -e "$a/status" ] && [ "$(cat "$a/status")" != "ALIVE" ]; then break; fi
    if [ -e "$a/temp" ] && [ "$(cat "$a/temp")" = "-89700" ]; then break; fi
    pcie_ready=$((pcie_ready + 1))
    apex_ready[$n]=true
    break
  done
done

for d in "$SYS"/bus/usb/devices/*; do
  case "${d##*/}" in *:*|usb*) continue ;; esac
  id="$(cat "$d/idVendor" 2>/dev/null):$(cat "$d/idProduct" 2>/dev/null)"
  [ "$id" = "1a6e:089a" ] || [ "$id" = "18d1:9302" ] || continue
  usb=$((usb + 1))
  bus=$(cat "$d/busnum" 2>/dev/null) && num=$(cat "$d/devnum" 2>/dev/null) || continue
  node=$(printf '%s/bus/usb/%03d/%03d' "$DEV" "$bus" "$num")
  node_ok "$node" "$d/dev" && usb_ready=$((usb_ready + 1))
done

echo "# coral-tpu labels (reference hook)"
count=$((pcie + usb))
ready=$((pcie_ready + usb_ready))
if [ "$count" -eq 0 ] && [ "$driver_loaded" = false ]; then
  exit 0
fi
tf() { if [ "$1" -gt 0 ]; then echo true; else echo false; fi; }
{
  echo "${P}coral-tpu.present=$(tf "$count")"
  echo "${P}coral-tpu.count=$count"
  echo "${P}coral-tpu.ready=$(tf "$ready")"
  echo "${P}coral-tpu.ready.count=$ready"
  echo "${P}coral-tpu.pcie.count=$pcie"
  echo "${P}coral-tpu.pcie.ready.count=$pcie_ready"
  echo "${P}coral-tpu.usb.count=$usb"
  echo "${P}coral-tpu.usb.ready.count=$usb_ready"
  echo "${P}coral-tpu.driver.loaded=$driver_loaded"
  if [[ "$version" =~ ^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$ ]]; then
    echo "${P}coral-tpu.driver.version=$version"
  fi
  for a in "$SYS"/class/apex/apex_*; do
    [ -e "$a" ] || continue
    n=${a##*/}
    echo "${P}coral-tpu.$n.ready=${apex_ready[$n]:-false}"
  done
  # libedgetpu's pci:N: class/apex in directory order (ls -U), entries whose /dev node
  # is a character device.
  i=0
  if [ -d "$SYS/class/apex" ]; then
    while read -r n; do
      case "$n" in apex_*) ;; *) continue ;; esac
      [ -c "$DEV/$n" ] || continue
      echo "${P}coral-tpu.libedgetpu.pci.$i.ready=${apex_ready[$n]:-false}"
      i=$((i + 1))
    done < <(ls -U -- "$SYS/class/apex")
  fi
} | LC_ALL=C sort
