// The stream.html page's start (a file, not inline: the pages' Content-Security-Policy
// runs only scripts this server serves).
import { streamPage } from '/assets/gradcam.js';
streamPage(decodeURIComponent(location.pathname.split('/').pop()));
