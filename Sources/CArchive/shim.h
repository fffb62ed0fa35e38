#include <archive.h>
#include <archive_entry.h>

// The AE_IF* file type macros carry a cast, so Swift cannot import them.
static const unsigned int airlock_ae_ifreg = AE_IFREG;
static const unsigned int airlock_ae_ifdir = AE_IFDIR;
static const unsigned int airlock_ae_iflnk = AE_IFLNK;
static const unsigned int airlock_ae_ififo = AE_IFIFO;
static const unsigned int airlock_ae_ifsock = AE_IFSOCK;
static const unsigned int airlock_ae_ifchr = AE_IFCHR;
static const unsigned int airlock_ae_ifblk = AE_IFBLK;
