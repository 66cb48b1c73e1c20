// libharu (Debian's libhpdf-dev ships no pkg-config file: the header is in /usr/include).
#include <hpdf.h>
