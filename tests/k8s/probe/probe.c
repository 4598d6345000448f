/*
 * A stand-in for Frigate's Edge TPU detector, run in a container with a Frigate
 * overlay's securityContext and devices: it resolves the `device:` strings of the
 * overlay's config as libedgetpu does and opens the node each lands on, as the Edge
 * TPU runtime would; and it opens other paths given after `--`. One line per check:
 *
 *   device pci:0 /dev/apex_1 120:1 ENXIO
 *   path /probe/other/apex_0 120:0 EPERM
 *
 * libedgetpu's PCIe numbering (google-coral/libedgetpu driver/driver_factory_default.cc,
 * DriverProvider::EnumerateByClass): readdir of /sys/class/apex, no sorting, names that
 * start with "apex", each kept when stat("/dev/<name>") is a character device; pci:N is
 * the N-th kept. Here the class directory is an argument (the fixture's, mounted in).
 * A device string that is a path is opened as it is (the tests resolve "usb" for a
 * single stick, which is libedgetpu's first).
 *
 * The open is O_RDWR, as libedgetpu's (driver/kernel/kernel_registers.cc and
 * kernel_event_handler_linux.cc open the node read-write). Without a driver for major
 * 120 here, a device cgroup that lets the node through gives ENXIO; one that refuses it
 * gives EPERM.
 *
 *   probe CLASS_DIR DEVICE... [-- PATH...]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const char *errname(int e) {
    switch (e) {
    case 0: return "OPEN";
    case ENXIO: return "ENXIO";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case ENODEV: return "ENODEV";
    case EROFS: return "EROFS";
    default: return "OTHER";
    }
}

static void try_open(const char *kind, const char *name, const char *path) {
    struct stat st;
    char rdev[32] = "-";
    if (stat(path, &st) == 0 && S_ISCHR(st.st_mode))
        snprintf(rdev, sizeof rdev, "%u:%u", major(st.st_rdev), minor(st.st_rdev));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0)
        close(fd);
    printf("%s %s %s %s %s\n", kind, name, path, rdev, errname(e));
}

/* The N-th apex node as libedgetpu counts them, or NULL. */
static char *pci_node(const char *class_dir, long n) {
    DIR *d = opendir(class_dir);
    if (!d)
        return NULL;
    struct dirent *e;
    long i = 0;
    char *found = NULL;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "apex", 4) != 0)
            continue;
        char path[512];
        struct stat st;
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        if (stat(path, &st) != 0 || !S_ISCHR(st.st_mode))
            continue;
        if (i++ == n) {
            found = strdup(path);
            break;
        }
    }
    closedir(d);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe CLASS_DIR DEVICE... [-- PATH...]\n");
        return 2;
    }
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *spec = argv[i];
        if (strncmp(spec, "pci:", 4) == 0) {
            char *node = pci_node(argv[1], strtol(spec + 4, NULL, 10));
            if (!node) {
                printf("device %s - - NONE\n", spec);
                continue;
            }
            try_open("device", spec, node);
            free(node);
        } else {
            try_open("device", spec, spec);
        }
    }
    for (i++; i < argc; i++)
        try_open("path", argv[i], argv[i]);
    return 0;
}
