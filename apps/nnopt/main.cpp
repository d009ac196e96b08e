#include <iostream>
int main() { std::cout << "nnopt\n"; return 0; }
